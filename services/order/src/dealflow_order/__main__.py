from dealflow_order.bootstrap import main

main()
