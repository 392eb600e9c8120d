"""mcpgw: an MCP gateway whose tools are driven by Nacos MCP-registry configuration.

The code lives in the repository's top-level folders (``adapter/``, ``remote/``, ``converter/``,
``registry/``, ``gateway/``), which the project's layout requires; it is installed as one import package,
``mcpgw.adapter``, ``mcpgw.remote`` and so on (``pyproject.toml`` maps the folders with setuptools'
``package-dir``; in a checkout, the links in this folder do the same for the tools that read the tree).
"""

__version__ = "0.2.0"
