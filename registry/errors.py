"""The one error tree of mcpgw.

Every error a user can see is a sentence that says what went wrong, where
(server / version / file / JSON path) and what to do.  Third-party exceptions
are translated at the layer boundary into the most specific type below
(``raise X(...) from exc``) so callers never catch SDK or HTTP library types.

    McpgwError
    ├── SourceError                 remote/: talking to Nacos, the files tree, memory
    │   ├── SourceUnavailable       unreachable / connection lost (retryable)
    │   ├── SourceAuthError         authentication failed or permission denied (terminal)
    │   └── SourceNotFound          the thing asked for does not exist
    ├── ConversionError             converter/: a snapshot that cannot become models
    ├── TemplateError               converter/template: a json-go-template that does not parse / render
    ├── StateError                  registry/: a state that fails its consistency check
    └── InvocationError             gateway/: a tool call that cannot be completed
"""

from __future__ import annotations


class McpgwError(Exception):
    """Root of every error mcpgw raises on purpose."""


class SourceError(McpgwError):
    """A configuration source (Nacos, files, memory) failed."""


class SourceUnavailable(SourceError):
    """The source cannot be reached right now; retrying later may help."""


class SourceAuthError(SourceError):
    """The source refused our credentials or permissions; retrying will not help."""


class SourceNotFound(SourceError):
    """The requested config, service or server does not exist at the source."""


class ConversionError(McpgwError):
    """A server's snapshot cannot be turned into gateway models.

    Carries the location so an operator can go straight to the problem.
    """

    def __init__(
        self,
        reason: str,
        *,
        server_id: str = "",
        version: str = "",
        file: str = "",
        path: str = "$",
        tool: str = "",
    ) -> None:
        self.reason = reason
        self.server_id = server_id
        self.version = version
        self.file = file
        self.path = path
        self.tool = tool
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.server_id:
            where.append(f"server {self.server_id}")
        if self.version:
            where.append(f"version {self.version}")
        if self.file:
            where.append(f"file {self.file}")
        if self.tool:
            where.append(f"tool {self.tool}")
        if self.path:
            where.append(f"at {self.path}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.reason}" if prefix else self.reason

    def location(self) -> dict[str, str]:
        return {
            "server_id": self.server_id,
            "version": self.version,
            "file": self.file,
            "tool": self.tool,
            "path": self.path,
            "reason": self.reason,
        }


class TemplateError(McpgwError):
    """A json-go-template that does not parse, uses something unsupported, or fails to render."""


class StateError(McpgwError):
    """A gateway state that fails its consistency check; it is never swapped in."""


class InvocationError(McpgwError):
    """A tool call that cannot be completed; the message is shown to the MCP client."""
