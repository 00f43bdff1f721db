from vidtune.cli.main import main

raise SystemExit(main())
