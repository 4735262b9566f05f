"""The operator's console: the page served at `/` (index.html, console.js, console.css: plain
JavaScript and inline SVG, no build step) and the pure summary behind GET /v1/console
(summary.py). The aiohttp side lives in runtime/console.py.
"""
