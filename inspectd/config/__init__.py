"""Station and product configuration: schema (pydantic, schema.py) and loading with line numbers (load.py).

Import from the submodules; this package stays empty so plugin modules can import `config.base`
without pulling in the schema that imports them.
"""
