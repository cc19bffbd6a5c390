from biorag.cli import main

main()
