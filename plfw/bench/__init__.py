"""``plfw bench``: timing the real training step beside a plain reference step.

Owns the timing (``timing``), plfw's own plain eager fp32 SRGAN step to compare with
(``reference``) and the default config (``srgan_vgg54.yaml``, the paper's), all shipped in the
wheel. A command plugin (``command``), registered through ``plfw_register_commands`` as a third
party's would be. It may import the core and training modules; nothing else imports it.
"""
