"""The service: REST API, dispatcher, scheduler, web pages and the `plateau` CLI.

Never imports torch at import time: the API process stays light (tests check this)."""
