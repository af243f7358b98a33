"""Write the book's generated pages when a build starts, so a plain `jupyter-book build .` works.

The table of contents names `book/status.md` and `_config.yml` names the favicon
`book/images/favicon.png`; both are written by `tools.status.write_pages()` from the
benchmark results, the notebooks' recorded execution times and the installed versions. Neither
is committed (they describe the machine that builds the book). Writing them here, before Sphinx
reads any source or checks the favicon, means `make book`, `make test` and a plain
`jupyter-book build .` all build the same site without a separate step.
"""

from sphinx.util import logging

logger = logging.getLogger(__name__)


def _write_generated_pages(app, config):
    try:
        from scaling_ml import PROJECT_ROOT
        from tools import status
    except ImportError as error:
        raise RuntimeError(
            f"The book's package is not importable ({error}): build from the book's environment "
            "(`make book`, or `pip install --no-deps -e .` in the environment you build with)."
        ) from error
    for path in status.write_pages():
        logger.info(f"generated {path.relative_to(PROJECT_ROOT)}")


def setup(app):
    # Before Sphinx's own config-inited handlers (the favicon check runs at priority 800).
    app.connect("config-inited", _write_generated_pages, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
