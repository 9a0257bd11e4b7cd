"""The command line: ``entry`` (the click-free fast path), ``commands`` (the click commands) and
``runcmd`` (the body of ``zenbuild run``)."""
