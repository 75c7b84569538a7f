from s2d_fast.cli import main

main()
