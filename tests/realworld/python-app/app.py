import six
print('app running with six', six.__version__, 'answer', open('/app/answer').read().strip())
