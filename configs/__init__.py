"""The YAML recipes, installed with the package as `s2d_fast.configs` (see
`s2d_fast.config.packaged_configs`), so that an installed s2d-fast finds them too."""
