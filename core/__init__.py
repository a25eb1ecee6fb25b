"""symfw core: interfaces, plugin system, specs, model assembly. Never imports plugins."""
