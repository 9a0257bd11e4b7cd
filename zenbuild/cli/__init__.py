"""The command line: ``entry`` (the click-free fast path), ``commands`` (the click commands),
``cachecmd`` (`zenbuild cache`), ``options`` (options they share) and ``runcmd`` (the body of
``zenbuild run``)."""
