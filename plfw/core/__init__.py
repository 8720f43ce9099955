"""The plugin core: the contract and what turns installed plugins into a registry.

Owns the hook specifications (``hookspecs``: the whole plugin contract in one file), plugin
discovery through entry points (``plugins``), the name -> factory registry and parameter
checking (``registry``), command registration (``commands``), the typed config schema with
overrides and bounded YAML (``config``), one-line user errors (``errors``) and the parameter
reference (``params_doc``). It imports nothing from the rest of plfw.
"""
