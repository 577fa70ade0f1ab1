from abstats.cli import main

main()
