"""The host side of NV-MRI runs: storage of lock and DEER maps, the run-end localization, figures and the `nvscope mri` command."""
