from distill.cli import main

if __name__ == "__main__":  # a spawned worker process (decoding a folder) imports this module too
    main()
