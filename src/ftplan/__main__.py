from ftplan.cli.app import main

main()
