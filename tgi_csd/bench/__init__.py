"""`tgi-csd bench`: greedy walltime benchmark of the engine against the decoders users would pick instead.

Modules: `options` (checked command-line options), `prompts` (prompt sets), `loading` (models shared
by all methods), `cost` (the paper's cost model and SWI), `methods` (one class per kind of method),
`ksweep` (grids of k-matrices), `runner` (the interleaved loop and the output check), `summary`
(per-method statistics), `report` (JSON, Markdown, console table), `plots` (PNG charts),
`environment`, `cli` (the command).
"""
