"""The Streamlit entry point: `streamlit run dashboards/app.py` (what `harness dashboard` starts).

The database is `$HARNESS_DB` (set by `harness dashboard --db PATH`), else ./harness.duckdb. The pages
live in dashboards/views/, the frame and error handling in dashboards/navigation.py.
"""

from dashboards.navigation import main

main()
