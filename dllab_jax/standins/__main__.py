from dllab_jax.standins import main

main()
