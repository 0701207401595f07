from typecase.server.cli import main

main()
