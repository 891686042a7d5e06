"""Built-in plugins, each loadable by name through ``FGEXT_PLUGINS`` like any third-party one."""
