from plait._entry import main

main()
