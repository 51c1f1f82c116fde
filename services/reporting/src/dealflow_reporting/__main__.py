from dealflow_reporting.bootstrap import main

main()
