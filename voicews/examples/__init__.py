"""The default config.yaml, its prompt and the example plugins, shipped inside the package.

``twistd -n voicews`` run where there is no config.yaml uses :data:`CONFIG`;
``voicews init DIR`` copies :data:`STARTER` (the same files) into DIR for a user
to edit.  In a clone of the repository, the root's config.yaml, prompts/ and
plugins/ are links to these, so there is one copy of each.  The plugin package
template (``voicews init --plugin NAME``) is in ``plugin-package/``.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config.yaml"
"""The embedded default config."""
STARTER = ("config.yaml", "prompts", "plugins")
"""What ``voicews init`` copies: the config and the folders it names."""
PLUGIN_PACKAGE = HERE / "plugin-package"
"""Templates of ``voicews init --plugin NAME``."""
