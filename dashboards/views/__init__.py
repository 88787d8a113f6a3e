"""One module per dashboard page, each with `render(ctx: PageContext)`.

Not named `pages/`: Streamlit would load a `pages/` folder beside the app file as extra pages of its own.
"""
