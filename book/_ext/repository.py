"""The ``clone-command`` directive: `git clone` of the book's repository, from `_config.yml`.

`repository.url` in `_config.yml` is the one setting for the repository's address: Jupyter Book
hands it to the theme (`html_theme_options["repository_url"]`), which makes the launch buttons
and the repository button from it, and this directive makes the setup page's and the instructor
guide's clone commands from it too::

    ```{clone-command}
    ```

renders as a bash block ``git clone URL.git`` / ``cd NAME``.
"""

from urllib.parse import urlparse

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

from scaling_ml import BookError


def repository_url(config) -> str:
    url = (getattr(config, "html_theme_options", {}) or {}).get("repository_url", "").rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname or parsed.path.strip("/").count("/") < 1:
        raise BookError(
            f"repository.url in _config.yml is {url!r}: set it to the book's repository, for example "
            "https://github.com/OWNER/NAME (the launch buttons and clone commands are made from it)."
        )
    return url.removesuffix(".git")


def clone_command(url: str) -> str:
    return f"git clone {url}.git\ncd {url.rsplit('/', 1)[1]}"


class CloneCommand(SphinxDirective):
    has_content = False

    def run(self):
        code = clone_command(repository_url(self.env.config))
        block = nodes.literal_block(code, code, language="bash")
        self.set_source_info(block)
        return [block]


def setup(app):
    app.add_directive("clone-command", CloneCommand)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
