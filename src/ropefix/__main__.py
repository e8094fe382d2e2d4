from ropefix.main import main

raise SystemExit(main())
