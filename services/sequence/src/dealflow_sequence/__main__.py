from dealflow_sequence.bootstrap import main

main()
