from minrep.cli import main

main()
