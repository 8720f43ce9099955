"""plfw's built-in plugins, each a module of hook implementations loaded through the ``plfw``
entry-point group, exactly as a third-party package's would be."""
