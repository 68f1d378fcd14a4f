"""The dashboard, as the package ``hub.static`` (see setup.py): this file
lets an editable install import it. Nothing here runs in the browser."""
