"""The reviewer's page: what check, matrix, baseline diff, the upgrade rehearsal and the version matrix found, as
one self-contained HTML file (`--html`) and as Markdown (`--summary`), both rendered from one model."""
