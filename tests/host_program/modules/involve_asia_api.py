from app.involve_asia import *
