from qwend.cli import main

main()
