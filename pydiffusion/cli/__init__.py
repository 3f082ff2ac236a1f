"""The command line, `pydiffusion COMMAND`: the parser and its one-line errors (main), one module per command, each
with HELP, add_arguments(parser) and run(args) (data, train, evaluate, sample, export, plot, classifier, noisy_classifier,
quality, doctor), and the options several commands share with their checks (options)."""
