from dealflow_quote.bootstrap import main

main()
