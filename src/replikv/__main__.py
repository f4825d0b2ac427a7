from replikv.cli import main

main()
