"""The v3-compatible API: the service behind `/api/v3/...`, the run viewer and the API keys.

- `service.py`: `V3Service`, what the endpoints do (trigger, reports, data, stop);
- `callers.py`: who is calling (the account of an active key) and the rate limits;
- `accounts.py`: the runtime each account used in its billing period, its quota;
- `viewer.py`: viewer links and the run a link's password opens;
- `keys.py`: creating, listing and revoking keys (`/api/keys`, `runyard keys`);
- `messages.py`: the hosted service's error messages, copied exactly.
- `ports.py`: what it needs of the engine, the config and the metrics it is handed.

Nothing is imported here: `runyard keys` loads `keys.py` without the rest.
"""
