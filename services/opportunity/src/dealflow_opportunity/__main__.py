from dealflow_opportunity.bootstrap import main

main()
