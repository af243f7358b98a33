"""Drop repeated inline <script> blocks from every page.

With Sphinx 7.3+, sphinx-thebe and sphinx-togglebutton register their inline configuration scripts
twice, so every page declares `const THEBE_JS_URL` twice and the browser logs a SyntaxError
("Identifier 'THEBE_JS_URL' has already been declared"); the copies differ only in
an empty versus a missing filename. tests/test_site.py fails on console errors.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", script) or None, tuple(sorted(attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(script)
    scripts[:] = kept



def setup(app):
    app.connect("html-page-context", _dedupe, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
