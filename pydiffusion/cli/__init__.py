"""The command line, `pydiffusion COMMAND` (main: the parser and its one-line errors): one module per command, each
with HELP, add_arguments(parser) and run(args), and the options several commands share with their checks (options)."""
