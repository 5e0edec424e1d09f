"""The live web view of a rig and its host (`nvscope web`, docs/web.md)."""
