"""The pipeline's stages: one thin adapter module per stage, each declaring `STAGE` (a
`builder.stages.base.StageSpec` listing its registered implementations side by side).
The contracts are in `base.py`, the registry in `registry.py`, the profiles in
`profiles.py`; the work itself lives in the domain packages (`builder/expand/`,
`builder/layer/`, `builder/compress/`, ...)."""
