"""Study files (`studies/*.yaml`): `source` reads YAML with line numbers, `load` validates a study,
`expand` turns it into one resolved run spec per row x seed under a profile."""
