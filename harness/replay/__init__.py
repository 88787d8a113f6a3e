"""The replay: feed logged requests to recommenders and estimate what each policy would have earned off-policy."""
