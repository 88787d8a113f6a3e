"""Hand-written English vocabularies for the synthetic world's titles and comments.

Each topic has its own word list (no word belongs to two topics), so a pretrained sentence encoder
sees real semantic structure: "crispy garlic noodles recipe" lands near other cooking titles and far
from "transfer striker penalty". Fillers are topic-neutral words typical of short-video titles;
stance words open comments (positive / negative / question).
"""

from __future__ import annotations

TOPICS: dict[str, tuple[str, ...]] = {
    "cooking": (
        "recipe", "noodles", "garlic", "dumplings", "kitchen", "chef", "crispy", "spicy", "soup", "bake",
        "oven", "sauce", "fried", "rice", "noodle", "pork", "chicken", "steamed", "flavor", "dough",
        "ginger", "wok", "braised", "seasoning", "breakfast", "dinner", "tofu", "chili", "homemade",
        "delicious", "pancake", "knife", "simmer", "tender", "marinade",
    ),
    "football": (
        "goal", "striker", "penalty", "referee", "midfielder", "league", "transfer", "stadium", "keeper",
        "dribble", "offside", "tackle", "header", "champions", "derby", "coach", "formation", "corner",
        "freekick", "defender", "winger", "assist", "hattrick", "kickoff", "pitch", "supporters",
        "tournament", "relegation", "captain", "volley", "foul", "substitute", "fixture", "matchday",
    ),
    "pets": (
        "puppy", "kitten", "cat", "dog", "paws", "fluffy", "leash", "groomer", "vet", "adopted", "hamster",
        "parrot", "rabbit", "whiskers", "purring", "barking", "fetch", "treats", "collar", "shelter",
        "cuddly", "tail", "kennel", "litter", "goldfish", "tortoise", "meow", "woof", "furry", "snuggle",
        "obedience", "paw", "feline", "canine",
    ),
    "travel": (
        "beach", "island", "flight", "passport", "hotel", "backpacking", "itinerary", "mountains",
        "sunset", "temple", "airport", "hostel", "luggage", "sightseeing", "cruise", "waterfall",
        "journey", "destination", "explore", "villa", "resort", "tourist", "landmark", "adventure",
        "scenic", "coastline", "roadtrip", "souvenir", "visa", "vacation", "canyon", "lagoon", "trek",
    ),
    "makeup": (
        "lipstick", "eyeliner", "foundation", "blush", "mascara", "contour", "concealer", "skincare",
        "palette", "eyeshadow", "highlighter", "serum", "moisturizer", "brushes", "glam", "glossy",
        "primer", "bronzer", "lashes", "brows", "toner", "cleanser", "tutorial", "complexion", "matte",
        "shimmer", "powder", "cosmetics", "nails", "manicure", "perfume", "beauty", "pores",
    ),
    "gaming": (
        "gameplay", "boss", "speedrun", "console", "controller", "multiplayer", "respawn", "loot",
        "quest", "level", "esports", "streamer", "headshot", "sniper", "dungeon", "raid", "pixel",
        "arcade", "joystick", "gamer", "leaderboard", "checkpoint", "combo", "glitch", "playthrough",
        "shooter", "strategy", "rpg", "keyboard", "ranked", "squad", "victory", "noob",
    ),
    "music": (
        "guitar", "piano", "melody", "chorus", "singer", "concert", "drums", "violin", "lyrics", "album",
        "band", "rapper", "beat", "harmony", "acoustic", "karaoke", "orchestra", "symphony", "vocals",
        "playlist", "song", "bass", "remix", "tune", "solo", "jazz", "opera", "microphone", "rhythm",
        "saxophone", "ballad", "cover", "studio",
    ),
    "finance": (
        "stocks", "investing", "dividend", "portfolio", "budget", "savings", "mortgage", "inflation",
        "interest", "crypto", "bitcoin", "market", "shares", "bonds", "retirement", "pension", "tax",
        "loan", "credit", "debt", "salary", "income", "wealth", "banking", "trading", "economy",
        "recession", "fund", "profit", "bullish", "bearish", "accountant", "frugal",
    ),
    "cars": (
        "engine", "horsepower", "turbo", "sedan", "coupe", "drift", "tires", "exhaust", "gearbox",
        "dashboard", "garage", "mechanic", "convertible", "supercar", "torque", "brakes", "suspension",
        "headlights", "racing", "motorway", "pickup", "diesel", "electric", "charging", "steering",
        "clutch", "odometer", "carwash", "bumper", "hatchback", "rally", "roadster", "wheels",
    ),
    "fitness": (
        "workout", "gym", "squats", "pushups", "cardio", "dumbbell", "protein", "muscle", "abs",
        "treadmill", "stretching", "yoga", "plank", "deadlift", "bench", "reps", "sets", "calories",
        "marathon", "jogging", "sweat", "trainer", "biceps", "core", "endurance", "flexibility",
        "burpees", "kettlebell", "pilates", "lunges", "bulking", "cutting", "physique",
    ),
    "comedy": (
        "prank", "hilarious", "joke", "sketch", "funny", "laugh", "parody", "standup", "comedian",
        "blooper", "sarcasm", "meme", "skit", "punchline", "awkward", "silly", "roast", "giggle",
        "impression", "improv", "spoof", "gag", "hysterical", "witty", "banter", "prankster", "cringe",
        "laughter", "humor", "clown", "goofy", "jester", "chuckle",
    ),
    "dance": (
        "choreography", "dancer", "ballet", "hiphop", "salsa", "tango", "breakdance", "moves", "routine",
        "spin", "twerk", "waltz", "groove", "footwork", "freestyle", "rehearsal", "ballroom", "shuffle",
        "popping", "locking", "contemporary", "flashmob", "duet", "pirouette", "tap", "zumba", "sway",
        "stage", "costume", "step", "crew", "battle", "moonwalk",
    ),
    "fishing": (
        "fishing", "bait", "rod", "reel", "lure", "trout", "salmon", "perch", "catch", "angler", "hook",
        "boat", "river", "lake", "carp", "waders", "fly", "angling", "pier", "net", "pike", "catfish",
        "bobber", "sinker", "shoreline", "spearfishing", "tuna", "marlin", "icefishing", "creek",
        "minnow", "harbor", "fisherman",
    ),
    "education": (
        "lesson", "exam", "math", "physics", "chemistry", "homework", "teacher", "student", "lecture",
        "grammar", "vocabulary", "biology", "algebra", "geometry", "calculus", "science", "university",
        "classroom", "tutor", "quiz", "notes", "essay", "study", "learning", "scholarship", "campus",
        "professor", "semester", "equation", "theorem", "experiment", "literature", "revision",
    ),
    "tech": (
        "smartphone", "laptop", "gadget", "unboxing", "processor", "battery", "software", "update",
        "camera", "screen", "tablet", "headphones", "charger", "smartwatch", "app", "coding", "robot",
        "drone", "wifi", "router", "benchmark", "chip", "android", "iphone", "server", "cloud", "hacker",
        "programmer", "algorithm", "ai", "startup", "specs", "firmware",
    ),
    "movies": (
        "trailer", "actor", "actress", "director", "scene", "plot", "sequel", "premiere", "cinema",
        "blockbuster", "review", "spoiler", "franchise", "villain", "hero", "screenplay", "oscar",
        "boxoffice", "thriller", "horror", "animation", "documentary", "casting", "cameo", "subtitles",
        "remake", "series", "episode", "finale", "cliffhanger", "soundtrack", "popcorn", "superhero",
    ),
    "farming": (
        "harvest", "tractor", "crops", "wheat", "barn", "cattle", "chickens", "orchard", "seeds", "soil",
        "irrigation", "greenhouse", "farmer", "livestock", "plow", "hay", "pasture", "dairy", "goats",
        "sheep", "vegetables", "organic", "compost", "fertilizer", "field", "village", "sowing",
        "ranch", "grain", "milking", "beekeeping", "honey", "cornfield",
    ),
    "fashion": (
        "outfit", "dress", "sneakers", "jacket", "runway", "designer", "denim", "handbag", "streetwear",
        "vintage", "accessories", "jewelry", "boots", "hoodie", "tailored", "stylish", "wardrobe",
        "lookbook", "model", "heels", "scarf", "sunglasses", "trendy", "thrift", "silk", "leather",
        "collection", "catwalk", "blazer", "skirt", "haul", "chic", "couture",
    ),
    "parenting": (
        "baby", "toddler", "newborn", "mom", "dad", "diaper", "bedtime", "nursery", "stroller",
        "breastfeeding", "tantrum", "kindergarten", "siblings", "lullaby", "pregnancy", "twins",
        "babysitter", "playground", "naptime", "teething", "preschool", "kids", "family", "parents",
        "daughter", "son", "crawling", "milestones", "homeschool", "bottle", "pacifier", "cradle",
        "grandma",
    ),
    "history": (
        "ancient", "empire", "dynasty", "emperor", "war", "castle", "medieval", "pyramid", "archaeology",
        "kingdom", "revolution", "artifact", "ruins", "pharaoh", "samurai", "knight", "battlefield",
        "treaty", "civilization", "manuscript", "monument", "roman", "viking", "legend", "chronicle",
        "heritage", "museum", "conquest", "sword", "colonial", "tomb", "scroll", "historian",
    ),
}

FILLERS: tuple[str, ...] = (
    "best", "new", "amazing", "easy", "quick", "today", "my", "first", "time", "ever", "watch", "day",
    "life", "tips", "guide", "how", "to", "the", "with", "for", "in", "top", "ten", "ultimate",
    "secret", "real", "challenge", "vlog", "part", "one", "two", "this", "why", "what", "never",
    "always", "simple", "perfect", "crazy", "little", "big", "full", "night", "morning", "weekend",
)

STANCES: tuple[str, ...] = ("positive", "negative", "question")
STANCE_WORDS: dict[str, tuple[str, ...]] = {
    "positive": (
        "love", "great", "awesome", "wonderful", "beautiful", "brilliant", "nice", "cool", "fantastic",
        "excellent", "impressive", "adorable", "wow", "agree", "thanks", "helpful", "inspiring",
    ),
    "negative": (
        "boring", "terrible", "awful", "disagree", "overrated", "fake", "annoying", "disappointing",
        "worst", "bad", "wrong", "clickbait", "meh", "lame", "waste",
    ),
    "question": (
        "where", "which", "who", "when", "anyone", "really", "seriously", "huh", "does", "can",
        "should", "is", "confused", "explain",
    ),
}


def topic_names(n: int) -> tuple[str, ...]:
    """The first n topic names (the vocabulary order is fixed, so a world is reproducible)."""
    names = tuple(TOPICS)
    if not 1 <= n <= len(names):
        raise ValueError(f"topics must lie in [1, {len(names)}], got {n}")
    return names[:n]
