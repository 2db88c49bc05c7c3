"""The browser UI's static files (index.html, app.js, style.css, vendor/), served at `/ui` by qwend/api/ui.py."""
