"""Stage implementations, one module per stage, each exposing `IMPLEMENTATIONS`
(name -> callable, all sharing the stage's interface); `reference` is always present."""
