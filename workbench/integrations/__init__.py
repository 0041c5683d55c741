"""Bridges to peer engines: they use the workbench's public API only (`workbench.integrations.trl`)."""
