"""The offline HTML dashboard of model health (plotly figures in Jinja2 pages)."""
