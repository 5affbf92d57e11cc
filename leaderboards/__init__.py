"""Table and plot emitters, and the committed reference results used by the CI regression check."""
