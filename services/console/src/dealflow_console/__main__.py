from dealflow_console.bootstrap import main

main()
