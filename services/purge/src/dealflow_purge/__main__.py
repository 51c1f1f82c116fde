from dealflow_purge.bootstrap import main

main()
