"""One module per subcommand; each is a thin layer from parsed arguments to package functions."""
